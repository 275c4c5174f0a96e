"""nano-aspo's road to real trainers: the verl plugin (verl_aspo.py), the adapter that trains a verl-style
loss of your own in nano-aspo (user_loss.py), the per-token weight checker (check_loss.py) and two
plausibly broken ASPO losses it catches (broken_aspo.py)."""
