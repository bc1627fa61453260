"""The Hugging Face Hub: the client and the final push (`push`), checkpoint pushes while training runs
(`checkpoints`, `hub_strategy`), and resuming a run from its pushed checkpoint (`resume`). The model card they push
is written by `adadpo.training.model_card`.

Every Hub client is built by `adadpo.hub.push.hub_api`, so tests replace `adadpo.hub.push.HfApi` with a local stand-in.
"""
