from gridmesh.console.app import main

main()
