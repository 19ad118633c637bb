"""The benchmark suite (`make bench`): lingma-gw against direct baselines and LiteLLM."""
