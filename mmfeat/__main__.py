from mmfeat.cli import main

main()
