"""Integrations with the libraries whose models the backend compiles (diffusers).

This package is the only code of ``pc_compile`` that touches diffusers objects. Importing it
imports no library: ``diffusers.py`` looks at a module only when diffusers is already loaded.
"""
