"""astrostack.stack"""
