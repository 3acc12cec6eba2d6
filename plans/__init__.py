"""braggscope.plans"""
