"""The paper's experiments as library functions that return data (writers are separate).

- :mod:`lidmem.experiments.vonmises`: Sec. 4.1 / Fig. 4, OD-Mem and DD-Mem on a von Mises
  mixture with a point mass.
"""
