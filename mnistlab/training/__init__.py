"""Training: the loops (engine), optimizers and schedules (optim), torchrun (distributed),
checkpoint files (checkpoint), a run's saved state (checkpoint_saver), --resume (resume) and the pipeline (trainer)."""
