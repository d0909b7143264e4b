"""Figures from records only: a point's figures, VISAGE, basin edges and their intervals
(``landscape``), figures drawn (``plots``), and the verdict line with what each number means
(``verdict``). Nothing here imports the loop or the engine."""
