from clusterops.cli import main

main()
