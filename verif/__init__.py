"""nms.verif"""
