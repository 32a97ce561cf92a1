"""Code both sides import: job states, the error-code table, message schemas.

Standard library only: this package ships inside severus.pyz.
"""
