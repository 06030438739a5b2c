"""lidmem.text2image"""
