"""lidmem.scoring"""
