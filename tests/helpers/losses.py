"""What a loss needs beyond the defaults to be defined, for the tests that call every registered loss."""

# EXO's target distribution [1 - e, e] needs e > 0 (the paper's 1e-3); every other loss runs on the defaults.
REQUIRED_HPARAMS = {"exo_pair": {"label_smoothing": 1e-3}, "ada_exo_pair": {"label_smoothing": 1e-3}}


def required(name: str) -> dict:
    return dict(REQUIRED_HPARAMS.get(name, {}))
