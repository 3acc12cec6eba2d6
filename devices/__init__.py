"""braggscope.devices"""
