"""Reading finished runs: stored answers judged again (``rejudge``), a sweep's shards joined
(``merge``), tables across runs (``compare``), the HTML and markdown report (``report``),
and a screen's leaderboard (``leaderboard``)."""
