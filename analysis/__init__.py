"""braggscope.analysis"""
