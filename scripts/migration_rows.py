"""placeholder"""
def page():
    return "# Migration\n"
