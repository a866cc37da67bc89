from gridmesh.eventmanager.app import main

main()
