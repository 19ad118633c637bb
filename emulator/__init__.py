"""lingma-emulator: a protocol-faithful EMULATOR of the Tongyi Lingma runtime (tests, demos)."""
