from petkit.cli import main

main()
