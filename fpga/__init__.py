"""nms.fpga"""
