"""Where a landscape is measured: points and grids (``grid``), and the order a sweep visits
them in: the full grid, coarse first, a shard, an adaptive search of the edges
(``planning``)."""
