"""braggscope: acquisition, control and analysis for nano-focused Bragg diffraction imaging."""
__version__ = "0.1.0"
