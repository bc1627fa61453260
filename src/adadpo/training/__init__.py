"""Training: the trainer (TRL DPOTrainer subclass), log-probs, collators and packing, checkpoints, the reference
log-prob cache, the non-finite guard, per-step metrics and model loading."""
