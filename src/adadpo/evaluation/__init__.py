"""Evaluation and on-policy data: generation, reward-model/verifier scoring, IFEval (lm-eval's checkers), and the
instruction prompts used to generate training pairs."""
