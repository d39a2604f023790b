"""astrostack.register"""
