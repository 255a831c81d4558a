"""hypnolum: firmware and host software for Hypno-Luminescence pods."""
__version__ = "0.1.0"
