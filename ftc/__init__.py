"""ftc, the finetune compiler: one spec, every target, one runtime."""

__version__ = "0.1.0"
