from gridmesh.storekeeper.app import main

main()
