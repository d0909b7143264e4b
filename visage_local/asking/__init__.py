"""What a model is asked, and how: chat templates and system prompts (``chat``), prompt sets
(``prompts``; AdvBench by default), jailbreak templates (``attacks``), reasoning syntaxes
(``reasoning``), and the paper's reference setting in one place (``reference``)."""
