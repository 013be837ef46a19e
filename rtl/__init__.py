"""nms.rtl"""
