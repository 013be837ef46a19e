"""cocotb infrastructure shared by every testbench: Verilator build/run helpers (``build``) and
stream bus-functional models with random idle/back-pressure and in-order checking (``streams``).
"""
