"""nms.gen"""
