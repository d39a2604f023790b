"""astrostack.combine"""
