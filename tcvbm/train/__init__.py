"""Training: one accelerate loop (:mod:`.loop`), the objectives it runs (:mod:`.objectives`)
and the ``tcvbm train`` / ``tcvbm distill`` entry points (:mod:`.run`)."""
