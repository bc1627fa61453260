"""The Hugging Face Hub: the model card (`card`), the client and the final push (`push`), checkpoint pushes while
training runs (`checkpoints`, `hub_strategy`), and resuming a run from its pushed checkpoint (`resume`).

Every Hub client is built by `adadpo.hub.push.hub_api`, so tests replace `adadpo.hub.push.HfApi` with a local stand-in.
"""
