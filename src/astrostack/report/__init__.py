"""astrostack.report"""
