"""What users run on whole models: thresholds checked against measured values (``check``),
and many models screened stage by stage and ranked (``screen``)."""
