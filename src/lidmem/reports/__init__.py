"""lidmem.reports"""
