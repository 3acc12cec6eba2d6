"""braggscope.simulators"""
