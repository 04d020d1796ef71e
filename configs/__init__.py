"""The shipped run configs (``*.yaml``) and model configs (``models/*.yaml``).

This folder is installed as the package ``tcvbm.configs`` (see pyproject.toml), so the YAML
files are found by import both in an installed wheel and, under an editable install, here in
the checkout. The module has no code: it only makes the folder a regular package, which an
editable install needs to map it.
"""
