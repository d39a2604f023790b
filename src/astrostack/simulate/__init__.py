"""astrostack.simulate"""
