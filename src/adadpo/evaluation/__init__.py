"""Evaluation and on-policy data: generation, IFEval (lm-eval's checkers) and reward-model scoring, prompt loading
(IFEval's fixed train / held-out halves, AlpacaEval / Arena-Hard files), and per-prompt win / loss statistics."""
