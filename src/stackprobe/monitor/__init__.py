"""The live health monitor behind `stackprobe serve`: probing, state, history, page, API."""
