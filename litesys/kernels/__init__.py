"""All Triton code of LiteSys (attention, Quest, sparse selection, norm/RoPE, MoE) and, in ``ref/``, its plain
PyTorch twins. Mechanism only: nothing here imports another litesys package (tests/test_architecture.py)."""
