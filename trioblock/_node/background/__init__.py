"""The node's background workers: the loop that runs them (``workers``), resync,
scrub, repair, rebalance, reference anti-entropy (``refsync``), the moves of a
layout change (``moving``), the hand-off before a GC deletion (``gcoffload``) and the
resumable walk they share (``blockwalk``)."""
