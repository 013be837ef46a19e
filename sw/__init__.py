"""nms.sw"""
