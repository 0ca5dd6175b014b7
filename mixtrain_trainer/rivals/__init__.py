"""Rival speed-up methods that need their own epoch loop (Selective-Backprop, StaleSB).

Mini-batch skipping and input scaling need none: they are a planner option and an input transform of
the ordinary loop (``sampler.plan_epoch(drop_batches=...)``, ``loop._downscale``).
"""
