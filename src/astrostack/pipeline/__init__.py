"""astrostack.pipeline"""
