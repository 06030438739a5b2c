"""lidmem.estimators"""
