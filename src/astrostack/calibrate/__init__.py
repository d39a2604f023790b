"""astrostack.calibrate"""
