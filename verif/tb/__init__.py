"""cocotb testbenches, one module per device under test. Each is run by a pytest test in
``tests/`` through :func:`nms.verif.sim.build.run_cocotb`.
"""
