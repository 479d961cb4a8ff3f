def main(): print("todo"); return 0
